"""Training sets of aligned faces: ImageFolder, insightface RecordIO and the synthetic set."""
