#!/usr/bin/env python3
"""The client of the socketserver documentation's first example (TCPServer
with MyTCPHandler, whose StreamRequestHandler form reads
`self.rfile.readline()` and answers it in upper case): it sends its
arguments as one line and waits for one `recv(1024)`.

The client's lines are the seed's, unchanged; the seed's server address was
the constant `"localhost", 9999`: this one takes the host and port as its
first two arguments (the rest are the data, as the seed's arguments were),
so that it runs against `upper_server` on any port (tests/programs_seeds.rs).

    python3 tcp_client.py 127.0.0.1 PORT hello world
"""
import socket
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
data = " ".join(sys.argv[3:])

# Create a socket (SOCK_STREAM means a TCP socket)
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    # Connect to server and send data
    sock.connect((HOST, PORT))
    sock.sendall(bytes(data + "\n", "utf-8"))

    # Receive data from the server and shut down
    received = str(sock.recv(1024), "utf-8")

print("Sent:     {}".format(data))
print("Received: {}".format(received))
