CREATE TABLE orders (id integer primary key, total integer);
