"""The ``--help`` layout every tav-* command shares: each option shows its default.

argparse's ArgumentDefaultsHelpFormatter, also for options without help text, except where
a default would mislead: None (the value comes from elsewhere: a config, the run, the
hardware; the help text says from where), a plain switch's False, and help texts that
already name their default.
"""

import argparse
import copy


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def add_argument(self, action):
        if not action.help and action.option_strings and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        super().add_argument(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if not _shows_default(action) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _shows_default(action) -> bool:
    # `is`, not `in`: 0 and 0.0 are real defaults, though they compare equal to False
    return not (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction))
