"""The hall of ports: the records and Protocols every wing shares, and nothing else.

The wings (diagnosis, runs, service) and the outer rooms (store, executors, adapters) meet here:
data as small frozen records, the outside world as Protocols the store and executors implement.
Nothing in this package does I/O beyond reading the clock.
"""
