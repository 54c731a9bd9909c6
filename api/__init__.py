"""The serving API: ad servers ask for variants and decisions over HTTP and report clicks back (`cli.py serve`)."""
