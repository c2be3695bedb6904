"""TFlow Studio entry point (the UI lands with the app issue)."""
if __name__ == "__main__":
    raise SystemExit("TFlow Studio's UI is not built yet: use `from tflow import Pipeline` meanwhile.")
