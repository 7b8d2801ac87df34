"""What the network is: configuration, layers and the HiFiC model."""
