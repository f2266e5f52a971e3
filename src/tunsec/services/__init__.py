"""The daemon's services: manual tunnels and IKE tunnels, each owning its SAs and policies."""
