"""The ``rams`` command line: thin wrappers that parse options, call one library function, render results."""
