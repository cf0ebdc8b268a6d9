"""`python -m mmpt` (also `accelerate launch -m mmpt ...`)."""

from mmpt.cli.app import main

if __name__ == "__main__":
    main()
