"""Domain services. They know nothing of HTTP: the server and the command line both call them."""
