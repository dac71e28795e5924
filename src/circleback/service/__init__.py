"""The tool service over HTTP: the Starlette app (:mod:`.app`) and ``serve`` (:mod:`.serve`)."""
