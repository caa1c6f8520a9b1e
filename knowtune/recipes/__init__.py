"""Study recipes: each paper's study as one command, chaining the library's stages."""
