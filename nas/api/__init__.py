"""Owns the Python API for notebooks and scripts: `nas.search(...)` runs a search and returns a
`SearchResult` (its study, winner, front and the report's plotly figures), `nas.load_search`
reads one back, `nas.retrain(...)` retrains a study's trial. It takes the command line's
configuration dataclasses (`nas.config`) and stores, and may import every layer but `cli`.
"""
