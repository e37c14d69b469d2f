"""The ``rams`` command line: thin wrappers that parse options, call one library function, render results."""

#: Help of ``--value-range`` (detect, quality).
VALUE_RANGE_HELP = ("Pixel values read as black and white, LO,HI (e.g. 0,4095 for 12-bit values in uint16; default: "
                    "by type, 0-1 for float, or the file's NBITS).")
