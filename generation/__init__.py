"""Generation: model registry, intent inference, and (later) copy, briefs and banners. Knows nothing of rewards."""
