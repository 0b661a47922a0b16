"""Teach a computer to sort waste photos from a handful of examples, on an ordinary laptop

Modules:

- `recycle_classifier.app.web`: `recycle-classifier export MODEL --web DIR` writes a folder that any static file server can serve: one page that classifies photos in the visitor's browser (ONNX Runtime Web, WebAssembly), with the model, the rules and the runtime beside it. Photos never leave the phone, any number of visitors cost the server only the files, and the page keeps working offline once it has loaded.
- `recycle_classifier.clean.scores`: Rank every photo of a dataset by how suspicious its label is, with out-of-fold probabilities from a cheap classifier on cached CNN embeddings and cleanlab's confident learning; flag unreadable files, near-duplicates and outliers. (Applying decisions: `clean.journal`; reviewing them: `clean.review`; the command: `clean.cli`.)"""

__version__ = "0.2.0"
