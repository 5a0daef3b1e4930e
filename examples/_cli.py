"""Shared by the examples' command lines (not an example itself)."""
import argparse


class DefaultsOnceFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends a default the help text does not state
    already (argparse's ArgumentDefaultsHelpFormatter prints stated ones twice, and None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"
