"""Stage: training. The settings and the split (`settings`), the head on cached features (`head`, `features`),
fine-tuning (`finetune`, `distributed`), `train()` and its command (`run`), and re-fitting a trained model to a
site (`adapt`)."""
