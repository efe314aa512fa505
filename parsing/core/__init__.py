"""The foundation every package builds on: errors, file I/O, CLI plumbing, label sets,
alignment, ONNX export, progress bars, contact sheets, typed configs, the sample contract and
the training loop every trainer shares."""
