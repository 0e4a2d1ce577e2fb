/* queues._sigcheck: seawall's message signatures (queues/signing.py) computed in C.

   Why: a signing app checks one HMAC-SHA256 per message it reads. In Python, building the
   canonical form and running the HMAC cost about 2.5 us a message, a quarter of what a
   pool spends on a message whose handler does nothing. Here the canonical form is laid out
   in one buffer and hashed with OpenSSL's SHA-256 (the same library hashlib uses), from the
   key's padded states prepared once: a few hundred nanoseconds.

   It computes exactly what queues/signing.py's reference implementation does (its
   docstring and docs/signing.md give the canonical form); tests/queues/test_signing.py
   holds the two equal on generated field maps. Without a C compiler or OpenSSL's headers
   the package installs without this module, and signing.py does the same in Python. */

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Update from a prepared state: EVP cannot start there */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64
#define HEX_LEN (2 * SHA256_DIGEST_LENGTH)
#define INLINE_BYTES 2048 /* canonical forms up to this size, padded, are laid out on the stack */

enum { OK = 0, NOT_SIGNED = 1, MALFORMED = 2, UNKNOWN_KEY = 3, MISMATCH = 4, TOO_LARGE = 5 };
#define MAX_KEY_ID 64

typedef struct {
    uint32_t inner[8]; /* SHA-256's state past the key xor ipad and the version */
    uint32_t outer[8]; /* past the key xor opad */
    Py_ssize_t id_len;
    char id[MAX_KEY_ID];
} PreparedKey;

typedef struct {
    const char *data;
    Py_ssize_t len;
} Piece;

typedef struct {
    Piece name;
    Piece value;
} Other;

/* What a field is to the canonical form: one of the named fields (its place in values[],
   from 1), a field the signature does not cover, the signature, or another covered field
   (a producer's header). */
enum { OTHER = -1, SKIPPED = -2, SIG = -3 };
#define MAX_NAMED 31
#define MAX_KNOWN 64
#define MAX_KNOWN_LEN 64 /* longest known field name */

typedef struct {
    const char *data;
    Py_ssize_t len;
    int role;
} KnownName;

typedef struct {
    PyObject_HEAD
    PyObject *names; /* the named tuple and the known frozenset: KnownName points into them */
    Py_ssize_t nnamed;
    int nknown;
    KnownName known[MAX_KNOWN]; /* sorted by length */
    unsigned char first[MAX_KNOWN_LEN + 2]; /* known[first[n]:first[n + 1]] are n bytes long */
    Py_ssize_t nkeys;
    PreparedKey *keys;
    Py_ssize_t prefix_len; /* bytes hashed into a key's inner state: a block and the version */
} Verifier;

/* One entry's fields, sorted out in one pass over its dict. */
typedef struct {
    Piece values[MAX_NAMED + 1]; /* the stream, then the named fields (empty if missing) */
    PyObject *sig;
    Other inline_others[8];
    Other *others;
    Py_ssize_t nothers;
    Py_ssize_t room;
} Entry;

static void put_u32(unsigned char *at, size_t value) {
    at[0] = (unsigned char)(value >> 24);
    at[1] = (unsigned char)(value >> 16);
    at[2] = (unsigned char)(value >> 8);
    at[3] = (unsigned char)value;
}

/* The bytes of a name or value: a bytes object's own, or a str's UTF-8 (a producer's fields
   are text: signing them needs no copy to bytes first). */
static int as_piece(PyObject *value, Piece *out, const char *what) {
    if (PyBytes_Check(value)) {
        out->data = PyBytes_AS_STRING(value);
        out->len = PyBytes_GET_SIZE(value);
    } else if (PyUnicode_Check(value)) {
        out->data = PyUnicode_AsUTF8AndSize(value, &out->len);
        if (out->data == NULL) return -1;
    } else {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or str, not %.100s", what,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    if ((size_t)out->len > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_OverflowError, "a signed field is longer than 4 GiB");
        return -1;
    }
    return 0;
}

/* Bytes order, as Python sorts bytes: unsigned lexicographic, a prefix first. */
static int by_name(const void *a, const void *b) {
    const Piece *x = &((const Other *)a)->name, *y = &((const Other *)b)->name;
    Py_ssize_t shorter = x->len < y->len ? x->len : y->len;
    int order = memcmp(x->data, y->data, (size_t)shorter);
    if (order != 0) return order;
    return (x->len > y->len) - (x->len < y->len);
}

/* Equal bytes, `len` of them: a field name is short, and comparing its first and last
   eight (or four) bytes as words, overlapping, costs less than a call to memcmp; every entry
   has all its names looked up. */
static int same_name(const char *a, const char *b, Py_ssize_t len) {
    uint64_t x8, y8, u8, v8;
    uint32_t x4, y4, u4, v4;
    Py_ssize_t i;
    if (len >= 8 && len <= 16) {
        memcpy(&x8, a, 8);
        memcpy(&y8, b, 8);
        memcpy(&u8, a + len - 8, 8);
        memcpy(&v8, b + len - 8, 8);
        return ((x8 ^ y8) | (u8 ^ v8)) == 0;
    }
    if (len >= 4 && len < 8) {
        memcpy(&x4, a, 4);
        memcpy(&y4, b, 4);
        memcpy(&u4, a + len - 4, 4);
        memcpy(&v4, b + len - 4, 4);
        return ((x4 ^ y4) | (u4 ^ v4)) == 0;
    }
    if (len < 4) {
        for (i = 0; i < len; i++)
            if (a[i] != b[i]) return 0;
        return 1;
    }
    return memcmp(a, b, (size_t)len) == 0;
}

static int role_of(const Verifier *self, const char *data, Py_ssize_t len) {
    int i;
    if (len > MAX_KNOWN_LEN) return OTHER;
    for (i = self->first[len]; i < self->first[len + 1]; i++) {
        if (same_name(self->known[i].data, data, len)) return self->known[i].role;
    }
    return OTHER;
}

static int by_length(const void *a, const void *b) {
    Py_ssize_t x = ((const KnownName *)a)->len, y = ((const KnownName *)b)->len;
    return (x > y) - (x < y);
}

/* Sort the table by length and index it (role_of looks only at names of the same length). */
static int index_names(Verifier *self) {
    int i;
    Py_ssize_t n;
    for (i = 0; i < self->nknown; i++) {
        if (self->known[i].len > MAX_KNOWN_LEN) {
            PyErr_Format(PyExc_ValueError, "known field names are at most %d bytes",
                         MAX_KNOWN_LEN);
            return -1;
        }
    }
    qsort(self->known, (size_t)self->nknown, sizeof(KnownName), by_length);
    for (n = 0, i = 0; n <= MAX_KNOWN_LEN + 1; n++) {
        while (i < self->nknown && self->known[i].len < n) i++;
        self->first[n] = (unsigned char)i;
    }
    return 0;
}

static void entry_release(Entry *entry) {
    if (entry->others != entry->inline_others) PyMem_Free(entry->others);
}

static int add_other(Entry *entry, PyObject *name, PyObject *value) {
    if (entry->nothers == entry->room) {
        Other *grown = PyMem_Malloc(sizeof(Other) * (size_t)entry->room * 2);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(grown, entry->others, sizeof(Other) * (size_t)entry->nothers);
        if (entry->others != entry->inline_others) PyMem_Free(entry->others);
        entry->others = grown;
        entry->room *= 2;
    }
    if (as_piece(name, &entry->others[entry->nothers].name, "a field's name") < 0 ||
        as_piece(value, &entry->others[entry->nothers].value, "a field's value") < 0)
        return -1;
    entry->nothers++;
    return 0;
}

/* Sort an entry's fields out (entry_release it afterwards, even on failure). */
static int entry_read(const Verifier *self, PyObject *fields, PyObject *stream, Entry *entry) {
    Py_ssize_t i, pos = 0;
    PyObject *name, *value;

    entry->sig = NULL;
    entry->others = entry->inline_others;
    entry->nothers = 0;
    entry->room = 8;
    if (!PyDict_Check(fields)) {
        PyErr_Format(PyExc_TypeError, "fields must be a dict, not %.100s",
                     Py_TYPE(fields)->tp_name);
        return -1;
    }
    if (as_piece(stream, &entry->values[0], "the stream name") < 0) return -1;
    for (i = 1; i <= self->nnamed; i++) {
        entry->values[i].data = "";
        entry->values[i].len = 0;
    }
    while (PyDict_Next(fields, &pos, &name, &value)) {
        Piece piece;
        int role;
        if (as_piece(name, &piece, "a field's name") < 0) return -1;
        role = role_of(self, piece.data, piece.len);
        if (role > 0) {
            if (as_piece(value, &entry->values[role], "a field's value") < 0) return -1;
        } else if (role == OTHER) {
            if (add_other(entry, name, value) < 0) return -1;
        } else if (role == SIG) {
            entry->sig = value;
        }
    }
    if (entry->nothers > 1)
        qsort(entry->others, (size_t)entry->nothers, sizeof(Other), by_name);
    return 0;
}

/* Unsigned LEB128: 7 bits a byte from the lowest, the top bit set on all but the last. */
static unsigned char *put_length(unsigned char *at, size_t value) {
    while (value >= 0x80) {
        *at++ = (unsigned char)(value & 0x7F) | 0x80;
        value >>= 7;
    }
    *at++ = (unsigned char)value;
    return at;
}

#define MAX_LENGTH_BYTES 5 /* a length under 4 GiB */

/* Lay the canonical form after its version out at `at` (see signing.py): the count and the
   lengths, then the values. Returns its length. */
static size_t lay_out(const Verifier *self, const Entry *entry, unsigned char *at) {
    Py_ssize_t nvalues = self->nnamed + 1, nothers = entry->nothers, i;
    const Piece *values = entry->values;
    const Other *others = entry->others;
    unsigned char *start = at;

    at = put_length(at, (size_t)nothers);
    for (i = 0; i < nvalues; i++) at = put_length(at, (size_t)values[i].len);
    for (i = 0; i < nothers; i++) at = put_length(at, (size_t)others[i].name.len);
    for (i = 0; i < nothers; i++) at = put_length(at, (size_t)others[i].value.len);
    for (i = 0; i < nvalues; i++) {
        memcpy(at, values[i].data, (size_t)values[i].len);
        at += values[i].len;
    }
    for (i = 0; i < nothers; i++) {
        memcpy(at, others[i].name.data, (size_t)others[i].name.len);
        at += others[i].name.len;
    }
    for (i = 0; i < nothers; i++) {
        memcpy(at, others[i].value.data, (size_t)others[i].value.len);
        at += others[i].value.len;
    }
    return (size_t)(at - start);
}

/* The most bytes lay_out can write for this entry. */
static size_t most_bytes(const Verifier *self, const Entry *entry) {
    Py_ssize_t i;
    size_t total = MAX_LENGTH_BYTES * (size_t)(2 + self->nnamed + 2 * entry->nothers);
    for (i = 0; i <= self->nnamed; i++) total += (size_t)entry->values[i].len;
    for (i = 0; i < entry->nothers; i++)
        total += (size_t)entry->others[i].name.len + (size_t)entry->others[i].value.len;
    return total;
}

/* SHA-256's padding of a message of `length` bytes in all: 0x80, zeros up to a block's last
   8 bytes, and the length in bits over them. `at` is where the message ends, `end` where
   its last block does. */
static void pad_after(unsigned char *at, unsigned char *end, size_t length) {
    uint64_t bits = (uint64_t)length * 8;
    *at++ = 0x80;
    memset(at, 0, (size_t)(end - 8 - at));
    put_u32(end - 8, (size_t)(bits >> 32));
    put_u32(end - 4, (size_t)(bits & 0xFFFFFFFFu));
}

/* Carry on SHA-256 from a prepared state over whole blocks already padded: one update, which
   OpenSSL hashes straight from the buffer (nothing to keep for a final step). */
static void compress(const uint32_t state[8], const unsigned char *blocks, size_t len,
                     uint32_t out[8]) {
    SHA256_CTX ctx;
    memcpy(ctx.h, state, sizeof(ctx.h));
    ctx.Nl = ctx.Nh = 0;
    ctx.num = 0;
    ctx.md_len = SHA256_DIGEST_LENGTH;
    SHA256_Update(&ctx, blocks, len);
    memcpy(out, ctx.h, sizeof(ctx.h));
}

/* Each byte's two lowercase hex digits. */
static char hex_pairs[256][2];

static void make_hex_pairs(void) {
    static const char digits[] = "0123456789abcdef";
    int b;
    for (b = 0; b < 256; b++) {
        hex_pairs[b][0] = digits[b >> 4];
        hex_pairs[b][1] = digits[b & 15];
    }
}

/* The HMAC of an entry's canonical form under a prepared key, as 64 lowercase hex digits.
   The form and SHA-256's padding are laid out in one buffer (on the stack up to
   INLINE_BYTES), so that each hash is one call over whole blocks: no buffering inside
   OpenSSL, no final step to pad and wipe. */
static int hex_mac(const Verifier *self, const Entry *entry, const PreparedKey *key,
                   char hex[HEX_LEN]) {
    unsigned char stack[INLINE_BYTES], outer[BLOCK], *form;
    size_t room = most_bytes(self, entry) + 2 * BLOCK, length, padded;
    uint32_t h[8];
    int i;

    form = room <= sizeof(stack) ? stack : PyMem_Malloc(room);
    if (form == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    length = lay_out(self, entry, form);
    padded = (length + 9 + BLOCK - 1) / BLOCK * BLOCK;
    pad_after(form + length, form + padded, (size_t)self->prefix_len + length);
    compress(key->inner, form, padded, h);
    if (form != stack) PyMem_Free(form);
    for (i = 0; i < 8; i++) put_u32(outer + 4 * i, h[i]);
    pad_after(outer + SHA256_DIGEST_LENGTH, outer + BLOCK, BLOCK + SHA256_DIGEST_LENGTH);
    compress(key->outer, outer, BLOCK, h);
    for (i = 0; i < 8; i++) {
        memcpy(hex + 8 * i, hex_pairs[h[i] >> 24], 2);
        memcpy(hex + 8 * i + 2, hex_pairs[(h[i] >> 16) & 0xFF], 2);
        memcpy(hex + 8 * i + 4, hex_pairs[(h[i] >> 8) & 0xFF], 2);
        memcpy(hex + 8 * i + 6, hex_pairs[h[i] & 0xFF], 2);
    }
    return 0;
}

static const PreparedKey *find_key(const Verifier *self, const char *id, Py_ssize_t len) {
    Py_ssize_t i;
    for (i = 0; i < self->nkeys; i++) {
        const PreparedKey *key = &self->keys[i];
        if (key->id_len == len && memcmp(key->id, id, (size_t)len) == 0) return key;
    }
    return NULL;
}

static int initialized(const Verifier *self) {
    if (self->names != NULL) return 1;
    PyErr_SetString(PyExc_TypeError, "this Verifier was not initialized");
    return 0;
}

/* The colon before the digits: where a well-formed signature has it, else the last one. */
static const char *key_id_end(const char *data, Py_ssize_t len) {
    if (len > HEX_LEN && data[len - HEX_LEN - 1] == ':') return data + len - HEX_LEN - 1;
    while (len > 0) {
        if (data[--len] == ':') return data + len;
    }
    return NULL;
}

/* Equal, in a time that does not depend on where they differ. */
static int same_digits(const char *a, const char *b) {
    uint64_t x, y, differ = 0;
    int i;
    for (i = 0; i < HEX_LEN; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        differ |= x ^ y;
    }
    return differ == 0;
}

/* The signature field is "<key id>:<64 hex digits>" (the last colon splits it). The payload
   (the first named field) is measured first: one longer than the limit is refused as too
   large, unhashed, so that an oversized entry costs its length only. */
static int judge(const Verifier *self, PyObject *fields, PyObject *stream, Py_ssize_t limit) {
    Entry entry;
    const PreparedKey *key;
    char hex[HEX_LEN];
    const char *sig, *colon;
    Py_ssize_t sig_len;
    int result;

    if (entry_read(self, fields, stream, &entry) < 0) goto fail;
    if (self->nnamed > 0 && entry.values[1].len > limit) {
        result = TOO_LARGE;
    } else if (entry.sig == NULL) {
        result = NOT_SIGNED;
    } else if (!PyBytes_Check(entry.sig) ||
               (colon = key_id_end(PyBytes_AS_STRING(entry.sig),
                                   PyBytes_GET_SIZE(entry.sig))) == NULL) {
        result = MALFORMED;
    } else {
        sig = PyBytes_AS_STRING(entry.sig);
        sig_len = PyBytes_GET_SIZE(entry.sig);
        key = find_key(self, sig, colon - sig);
        if (key == NULL) {
            result = UNKNOWN_KEY;
        } else if (sig_len - (colon + 1 - sig) != HEX_LEN) {
            result = MISMATCH;
        } else {
            if (hex_mac(self, &entry, key, hex) < 0) goto fail;
            result = same_digits(colon + 1, hex) ? OK : MISMATCH;
        }
    }
    entry_release(&entry);
    return result;
fail:
    entry_release(&entry);
    return -1;
}

static PyObject *verdict(Verifier *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t limit;
    int result;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "verdict(fields, stream, limit) takes 3 arguments");
        return NULL;
    }
    if (!initialized(self)) return NULL;
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    result = judge(self, args[0], args[1], limit);
    return result < 0 ? NULL : PyLong_FromLong(result);
}

static PyObject *mac(Verifier *self, PyObject *const *args, Py_ssize_t nargs) {
    Entry entry;
    const PreparedKey *key;
    char hex[HEX_LEN];

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "mac(fields, stream, key_id) takes 3 arguments");
        return NULL;
    }
    if (!initialized(self)) return NULL;
    if (!PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "the key id must be bytes");
        return NULL;
    }
    key = find_key(self, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    if (key == NULL) {
        PyErr_SetObject(PyExc_KeyError, args[2]);
        return NULL;
    }
    if (entry_read(self, args[0], args[1], &entry) < 0 || hex_mac(self, &entry, key, hex) < 0) {
        entry_release(&entry);
        return NULL;
    }
    entry_release(&entry);
    return PyBytes_FromStringAndSize(hex, HEX_LEN);
}

/* The state after the key xor a pad byte (one block), then `rest` (whole blocks). */
static void prepare_one(uint32_t state[8], const unsigned char block[BLOCK], unsigned char pad,
                        const char *rest, Py_ssize_t rest_len) {
    unsigned char padded[BLOCK];
    SHA256_CTX ctx;
    int i;
    for (i = 0; i < BLOCK; i++) padded[i] = block[i] ^ pad;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, padded, BLOCK);
    SHA256_Update(&ctx, rest, (size_t)rest_len);
    memcpy(state, ctx.h, sizeof(ctx.h));
    OPENSSL_cleanse(padded, sizeof(padded));
    OPENSSL_cleanse(&ctx, sizeof(ctx));
}

static void prepare(PreparedKey *key, const char *secret, Py_ssize_t len, const char *version,
                    Py_ssize_t version_len) {
    unsigned char block[BLOCK];

    memset(block, 0, sizeof(block));
    if (len > BLOCK)
        SHA256((const unsigned char *)secret, (size_t)len, block);
    else
        memcpy(block, secret, (size_t)len);
    prepare_one(key->inner, block, 0x36, version, version_len);
    prepare_one(key->outer, block, 0x5c, "", 0);
    OPENSSL_cleanse(block, sizeof(block));
}

static int same(PyObject *a, PyObject *b) {
    return PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) &&
           memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(a)) == 0;
}

/* The table role_of reads: each named field with its place, then the other known ones. */
static int learn_names(Verifier *self, PyObject *named, PyObject *known, PyObject *sig_field) {
    Py_ssize_t i;
    PyObject *name, *names;

    if (PyTuple_GET_SIZE(named) > MAX_NAMED ||
        PyTuple_GET_SIZE(named) + PySet_GET_SIZE(known) > MAX_KNOWN) {
        PyErr_Format(PyExc_ValueError, "at most %d named fields, and %d named and known",
                     MAX_NAMED, MAX_KNOWN);
        return -1;
    }
    self->nknown = 0;
    for (i = 0; i < PyTuple_GET_SIZE(named); i++) {
        name = PyTuple_GET_ITEM(named, i);
        if (!PyBytes_Check(name)) goto not_bytes;
        self->known[self->nknown++] = (KnownName){PyBytes_AS_STRING(name),
                                                  PyBytes_GET_SIZE(name), (int)(i + 1)};
    }
    self->nnamed = PyTuple_GET_SIZE(named);
    names = PySequence_Tuple(known); /* the frozenset's own objects, held by it */
    if (names == NULL) return -1;
    for (i = 0; i < PyTuple_GET_SIZE(names); i++) {
        int role = SKIPPED, found;
        name = PyTuple_GET_ITEM(names, i);
        if (!PyBytes_Check(name)) {
            Py_DECREF(names);
            goto not_bytes;
        }
        found = PySequence_Contains(named, name);
        if (found < 0) {
            Py_DECREF(names);
            return -1;
        }
        if (found) continue;
        if (same(name, sig_field)) role = SIG;
        self->known[self->nknown++] = (KnownName){PyBytes_AS_STRING(name),
                                                  PyBytes_GET_SIZE(name), role};
    }
    Py_DECREF(names);
    return index_names(self);
not_bytes:
    PyErr_SetString(PyExc_TypeError, "field names must be bytes");
    return -1;
}

static int Verifier_init(Verifier *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"keys", "version", "named", "known", "sig_field", NULL};
    PyObject *keys, *named, *known, *sig_field, *held;
    const char *version;
    Py_ssize_t version_len, pos = 0, i = 0;
    PyObject *key_id, *secret;
    PreparedKey *prepared;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!y#O!O!S", names, &PyDict_Type, &keys,
                                     &version, &version_len, &PyTuple_Type, &named,
                                     &PyFrozenSet_Type, &known, &sig_field))
        return -1;
    if (self->names != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Verifier is initialized once");
        return -1;
    }
    if (version_len % BLOCK != 0) {
        PyErr_Format(PyExc_ValueError, "the version is whole blocks of %d bytes", BLOCK);
        return -1;
    }
    if (learn_names(self, named, known, sig_field) < 0) return -1;
    prepared = PyMem_Calloc((size_t)(PyDict_GET_SIZE(keys) ? PyDict_GET_SIZE(keys) : 1),
                            sizeof(PreparedKey));
    if (prepared == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    while (PyDict_Next(keys, &pos, &key_id, &secret)) {
        if (!PyBytes_Check(key_id) || !PyBytes_Check(secret)) {
            PyErr_SetString(PyExc_TypeError, "keys must map key ids (bytes) to keys (bytes)");
            goto fail;
        }
        if (PyBytes_GET_SIZE(key_id) > MAX_KEY_ID ||
            memchr(PyBytes_AS_STRING(key_id), ':', (size_t)PyBytes_GET_SIZE(key_id))) {
            PyErr_Format(PyExc_ValueError, "key ids are at most %d bytes, without ':'",
                         MAX_KEY_ID);
            goto fail;
        }
        prepare(&prepared[i], PyBytes_AS_STRING(secret), PyBytes_GET_SIZE(secret), version,
                version_len);
        prepared[i].id_len = PyBytes_GET_SIZE(key_id);
        memcpy(prepared[i].id, PyBytes_AS_STRING(key_id), (size_t)prepared[i].id_len);
        i++;
    }
    held = PyTuple_Pack(2, named, known);
    if (held == NULL) goto fail;
    self->keys = prepared;
    self->nkeys = i;
    self->prefix_len = BLOCK + version_len;
    self->names = held;
    return 0;
fail:
    OPENSSL_cleanse(prepared, sizeof(PreparedKey) * (size_t)i);
    PyMem_Free(prepared);
    return -1;
}

static void Verifier_dealloc(Verifier *self) {
    if (self->keys != NULL) OPENSSL_cleanse(self->keys, sizeof(PreparedKey) * (size_t)self->nkeys);
    PyMem_Free(self->keys);
    Py_XDECREF(self->names);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Verifier_methods[] = {
    {"verdict", (PyCFunction)(void (*)(void))verdict, METH_FASTCALL,
     "verdict(fields, stream, limit) -> 0 signed by a known key, 1 not signed, 2 signature "
     "field malformed, 3 unknown key id, 4 signature does not match, 5 payload (the first "
     "named field) longer than limit, not hashed"},
    {"mac", (PyCFunction)(void (*)(void))mac, METH_FASTCALL,
     "mac(fields, stream, key_id) -> the signature (64 hex digits, bytes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject VerifierType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "queues._sigcheck.Verifier",
    .tp_basicsize = sizeof(Verifier),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An app's signing keys, prepared for checking and making signatures.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Verifier_init,
    .tp_dealloc = (destructor)Verifier_dealloc,
    .tp_methods = Verifier_methods,
};

/* A handler's door: called with each entry it reads (any object with a `fields` dict and
   an int `verdict`, a queues.envelope.Envelope), it returns None for an entry signed by a
   known key whose payload is within the limit, and otherwise what `refuse(verdict, entry)`
   returns (the runtime's dead-letter outcome). The same check as `verdict`, called straight
   from the handler's stack: a consumer pays for no Python frame around it on every message.

   `check_all(entries)` checks a whole batch as it is read and leaves each verdict on its
   entry, which the call then only reads. Checked one at a time, between two messages'
   Python, each check found the hashing code, its tables and the entry gone from the CPU's
   nearest caches, and cost about twice as much as in a loop (bench/side_by_side.py). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Verifier *verifier;
    PyObject *stream;
    Py_ssize_t limit;
    PyObject *refuse;
} Admission;

static PyObject *fields_name;  /* "fields", interned */
static PyObject *verdict_name; /* "verdict", interned */

/* An entry's verdict under this admission's verifier, stream and limit (-1 on an error). */
static int admission_judge(const Admission *self, PyObject *entry) {
    PyObject *fields = PyObject_GetAttr(entry, fields_name);
    int result;
    if (fields == NULL) return -1;
    result = judge(self->verifier, fields, self->stream, self->limit);
    Py_DECREF(fields);
    return result;
}

/* The verdict check_all left on the entry, or -1 if it has none (not read in a batch). */
static int verdict_left(PyObject *entry, int *result) {
    PyObject *left = PyObject_GetAttr(entry, verdict_name);
    long value;
    if (left == NULL) return -1;
    value = PyLong_AsLong(left);
    Py_DECREF(left);
    if (value == -1 && PyErr_Occurred()) return -1;
    *result = value > TOO_LARGE ? -1 : (int)value;
    return 0;
}

static PyObject *Admission_vectorcall(Admission *self, PyObject *const *args, size_t nargsf,
                                      PyObject *kwnames) {
    PyObject *code, *refusal, *call[2];
    int result;

    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "an Admission takes one entry");
        return NULL;
    }
    if (verdict_left(args[0], &result) < 0) return NULL;
    if (result < 0 && (result = admission_judge(self, args[0])) < 0) return NULL;
    if (result == OK) Py_RETURN_NONE;
    code = PyLong_FromLong(result);
    if (code == NULL) return NULL;
    call[0] = code;
    call[1] = args[0];
    refusal = PyObject_Vectorcall(self->refuse, call, 2, NULL);
    Py_DECREF(code);
    return refusal;
}

static PyObject *Admission_check_all(Admission *self, PyObject *entries) {
    Py_ssize_t i;
    int result, failed = 0;
    PyObject *code, *batch = PySequence_Fast(entries, "check_all takes a sequence of entries");

    if (batch == NULL) return NULL;
    for (i = 0; i < PySequence_Fast_GET_SIZE(batch) && !failed; i++) {
        PyObject *entry = PySequence_Fast_GET_ITEM(batch, i);
        result = admission_judge(self, entry);
        code = result < 0 ? NULL : PyLong_FromLong(result);
        failed = code == NULL || PyObject_SetAttr(entry, verdict_name, code) < 0;
        Py_XDECREF(code);
    }
    Py_DECREF(batch);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Admission_methods[] = {
    {"check_all", (PyCFunction)Admission_check_all, METH_O,
     "check_all(entries): check every entry of a batch, leaving its verdict on it"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Admission_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"verifier", "stream", "limit", "refuse", NULL};
    PyObject *verifier, *stream, *refuse;
    Py_ssize_t limit;
    Admission *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!SnO", names, &VerifierType, &verifier,
                                     &stream, &limit, &refuse))
        return NULL;
    if (!initialized((Verifier *)verifier)) return NULL;
    if (!PyCallable_Check(refuse)) {
        PyErr_SetString(PyExc_TypeError, "refuse must be callable");
        return NULL;
    }
    self = (Admission *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)Admission_vectorcall;
    self->verifier = (Verifier *)Py_NewRef(verifier);
    self->stream = Py_NewRef(stream);
    self->limit = limit;
    self->refuse = Py_NewRef(refuse);
    return (PyObject *)self;
}

static void Admission_dealloc(Admission *self) {
    Py_XDECREF(self->verifier);
    Py_XDECREF(self->stream);
    Py_XDECREF(self->refuse);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject AdmissionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "queues._sigcheck.Admission",
    .tp_basicsize = sizeof(Admission),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Admission(verifier, stream, limit, refuse): one handler's check of each entry "
              "(called with one), or of a batch (check_all).",
    .tp_new = Admission_new,
    .tp_dealloc = (destructor)Admission_dealloc,
    .tp_vectorcall_offset = offsetof(Admission, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_methods = Admission_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "queues._sigcheck",
    .m_doc = "seawall's message signatures in C (see queues/signing.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__sigcheck(void) {
    PyObject *m;
    make_hex_pairs();
    fields_name = PyUnicode_InternFromString("fields");
    verdict_name = PyUnicode_InternFromString("verdict");
    if (fields_name == NULL || verdict_name == NULL) return NULL;
    if (PyType_Ready(&VerifierType) < 0 || PyType_Ready(&AdmissionType) < 0) return NULL;
    m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Verifier", (PyObject *)&VerifierType) < 0 ||
        PyModule_AddObjectRef(m, "Admission", (PyObject *)&AdmissionType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
