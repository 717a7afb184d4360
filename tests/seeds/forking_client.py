#!/usr/bin/env python3
"""The client of the book's forking socketserver example (a ForkingMixIn
TCPServer whose handler answers one `recv(1024)`): it sends a message with
no newline, then waits for one `recv(1024)`.

The client's lines are the seed's; the Python 2 `print` statements and the
str message became Python 3's `print()` and bytes. The seed started its own
server on port 0 in the same script and took the address from it; this one
takes the server's host and port from the command line instead, so that it
runs against `echo_server --mode forking` (tests/programs_seeds.rs).

    python3 forking_client.py 127.0.0.1 PORT
"""
import socket
import sys

if __name__ == '__main__':
    ip, port = sys.argv[1], int(sys.argv[2])

    # Connect to the server
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect((ip, port))

    # Send the data
    message = 'Hello, world'.encode()
    print('Sending : {!r}'.format(message))
    len_sent = s.send(message)

    # Receive a response
    response = s.recv(1024)
    print('Received: {!r}'.format(response))

    # Clean up
    s.close()
