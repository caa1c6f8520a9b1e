"""The knowledge audit of a user's SFT set: SliCK categories per row, a summary and an HTML report."""
