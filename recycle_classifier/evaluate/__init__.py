"""Stage: which photos to score and the scores (`scoring`), figures and the HTML report (`report`), the
`evaluate` and `explain` commands (`cli`)."""
