"""repro: the user side — CLI, recipes, run directories, figures and the terminal app."""
