"""linkdesk's Textual user interface."""
