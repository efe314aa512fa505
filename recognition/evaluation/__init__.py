"""Evaluation: embeddings, ROC, .bin verification, IJB-B/C, occlusion, protocol writers, plots."""
