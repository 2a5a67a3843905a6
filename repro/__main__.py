"""`python -m repro` runs the command-line interface, as the `repro` script does."""

from repro.cli import main

if __name__ == "__main__":
    main()
