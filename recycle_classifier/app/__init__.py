"""Stage: the sorting app. Verdicts and result cards (`verdict`), the ipywidgets app (`widget`), Voila serving it
(`server`) and the static export that classifies in the browser (`web`)."""
