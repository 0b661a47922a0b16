"""Stage: label cleaning. Suspicion scores (`scores`), journaled moves with an exact undo (`journal`), review as a
CSV or in a widget (`review`), the command (`cli`)."""
