"""TFlow Studio: `python app.py [options]` is `tflow-studio [options]` (see tflow/studio/cli.py, `--help`)."""
from tflow.studio.cli import main

if __name__ == "__main__":
    main()
