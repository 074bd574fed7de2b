"""demo subsystem 50000: the server the IPC load workloads drive.

``demo_sleep`` blocks the serving thread, which is how a thread model's growth under a
flood is made visible.
"""

from protocol.mig import OOL, Subsystem, natural_t

demo = Subsystem("demo", 50000)

demo_null = demo.routine("demo_null", 0)
demo_echo = demo.routine("demo_echo", 1, [("data", OOL())], [("data", OOL())])
demo_sleep = demo.routine("demo_sleep", 2, [("msecs", natural_t)])
demo_send = demo.simpleroutine("demo_send", 3, [("data", OOL())])
