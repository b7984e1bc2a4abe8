"""What a user reads about a study or a run: `page` (the HTML report of a study), `figures`
(its plotly figures), `trials` (a trial in words: its architecture line, percentages, hover
text) and `curves` (a run's training curves page).

Imports: the foundations, `nas.arch` and `nas.search` (the winner, the front, the time
account); no torch (`curves` names `nas.train.state.EpochRow` as a type only).
"""
