def make(n):
    def inner():
        return n
    return inner
F = make(3)
G = lambda x: x + 1
