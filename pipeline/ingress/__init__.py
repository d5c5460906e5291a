"""Ways work comes in besides direct bucket uploads: the watched folder, and the HTTP ingress."""
