"""Process reward models: a score for the last step of each path."""
