"""What a packaged install needs beyond the code: writing the sample configuration out."""
