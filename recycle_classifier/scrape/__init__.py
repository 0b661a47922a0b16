"""Stage: a labelled photo folder from image search: settings (`config`), search pages (`search`), downloads
(`download`), checks (`verify`), the manifest (`manifest`), the run (`run`) and its report (`report`), the
command (`cli`)."""
