"""circleback's engine, store, state machine and plugin interfaces."""
