"""linkdesk's core: model, rules, API adapter, cache, sync and simulator. Never imports textual or rich."""
