"""Owns `UserError`: the one exception type for mistakes a user can cause and fix.

Every module raises `UserError` (or a subclass) for bad input: a bad flag value, a missing or
malformed file, an impossible budget, a missing dataset. Its message is one plain sentence that
says what was wrong and how to fix it. The command line turns it into that sentence on stderr and
exit status 2, with no traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message is one sentence saying how to fix it."""
