"""Errors for bad input: their message is one line naming the file and the problem."""


class InputError(ValueError):
    """Expected bad input (a file, folder or store the user gave us is unusable).

    Front ends show ``str(error)`` as one line, without a traceback.
    """
