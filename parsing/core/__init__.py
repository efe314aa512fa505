"""The foundation every package builds on: errors, file I/O, CLI plumbing, label sets,
alignment, ONNX export, progress bars and contact sheets."""
