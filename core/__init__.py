"""linkdesk's core: model, rules, API adapter, cache, sync and simulator. Never imports textual or rich."""

import logging as _logging

# A library never configures logging; without a handler of the application's, nothing is printed.
_logging.getLogger("linkdesk").addHandler(_logging.NullHandler())
