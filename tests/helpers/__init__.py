"""What several test modules share: tiny MNIST files, composed configs, quick runs, steps built from config objects, fault injection."""
