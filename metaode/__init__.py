"""metaode: closed ODEs for online (meta-)learning of two-layer networks, checked against
simulations of large networks."""
