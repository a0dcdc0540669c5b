"""Tools beside the product: the load generator (bench) and the stop client."""
