"""What one running bot process needs beside the wings: its identity, leadership, logs, metrics."""
