"""`repro tui`: the Textual terminal app (recipes, live runs, analyses). Entry point: repro.tui.app.run_app."""
