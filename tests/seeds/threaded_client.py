#!/usr/bin/env python3
"""The client of the socketserver documentation's threaded example
("Asynchronous Mixins": ThreadedTCPServer, whose handler answers one
`recv(1024)` with `<thread name>: <data>`).

The `client` function is the seed's, unchanged. The seed started its own
server on port 0 in the same script and took the address from it; this one
takes the server's host and port from the command line instead, so that it
runs against `pid_echo` (tests/programs_seeds.rs).

    python3 threaded_client.py 127.0.0.1 PORT
"""
import socket
import sys


def client(ip, port, message):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect((ip, port))
        sock.sendall(bytes(message, 'ascii'))
        response = str(sock.recv(1024), 'ascii')
        print("Received: {}".format(response))


if __name__ == "__main__":
    ip, port = sys.argv[1], int(sys.argv[2])
    client(ip, port, "Hello World 1")
    client(ip, port, "Hello World 2")
    client(ip, port, "Hello World 3")
