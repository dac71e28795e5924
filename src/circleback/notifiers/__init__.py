"""The completion modes that ship with circleback, each a plugin in its own module."""
