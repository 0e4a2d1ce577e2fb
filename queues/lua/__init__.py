"""The Lua scripts, one file per atomic operation; see ``queues.scripts`` for the loader."""
