"""The job types that ship with circleback, each a plugin in its own module."""
