"""diffusers and transformers told to keep quiet when they were imported before a command ran.

tav.runtime.command.quiet_environment sets the variables they read on import; a library already
imported (a test or a host program calling ``main()``) does not read them again.
"""

import sys


def quiet_loaded_libraries():
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
