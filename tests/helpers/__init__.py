"""What several test modules share: tiny MNIST files, composed configs, quick runs, fault injection."""
